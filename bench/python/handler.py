"""The plain-Python baseline of the cold-start comparison: what a minimal scheduled trigger
does, written the obvious way with boto3 and urllib.

Per invocation: read the CircleCI token from Secrets Manager (cached for the container's
life, as the Rust functions cache it), claim the slot with a DynamoDB conditional put, POST
the pipeline to CircleCI, record the pipeline id on the claim.
"""

import json
import os
import time
import urllib.request

import boto3

API_URL = os.environ["CIRCLECI_API_URL"].rstrip("/")
TABLE = os.environ["TRIGGERS_TABLE"]
TOKENS_SECRET_ID = os.environ["TOKENS_SECRET_ID"]
PROJECT = "gh/acme/api"

secrets = boto3.client("secretsmanager")
dynamodb = boto3.client("dynamodb")
_token = None


def token():
    global _token
    if _token is None:
        value = secrets.get_secret_value(SecretId=TOKENS_SECRET_ID)["SecretString"]
        _token = json.loads(value)["default"]
    return _token


def handler(event, context):
    slot = event.get("run_id") or event.get("scheduled_time") or str(time.time())
    pk = f"PYBENCH#{slot}"
    dynamodb.put_item(
        TableName=TABLE,
        Item={"pk": {"S": pk}, "sk": {"S": "CLAIM"}, "state": {"S": "sending"}},
        ConditionExpression="attribute_not_exists(pk)",
    )
    body = json.dumps({"branch": "main", "parameters": {"run-workflow": "build"}}).encode()
    request = urllib.request.Request(
        f"{API_URL}/project/{PROJECT}/pipeline",
        data=body,
        method="POST",
        headers={
            "Circle-Token": token(),
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        pipeline = json.loads(response.read())
    dynamodb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": pk}, "sk": {"S": "CLAIM"}},
        UpdateExpression="SET #state = :done, pipeline_id = :id",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={":done": {"S": "done"}, ":id": {"S": pipeline["id"]}},
    )
    return {"outcome": "fired", "pipeline_id": pipeline["id"], "number": pipeline.get("number")}
