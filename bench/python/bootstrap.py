"""A minimal Lambda runtime loop (what a `provided` runtime's bootstrap does), with urllib:
the handler module is imported once, then every event from the Runtime API is handled and
answered."""

import json
import os
import traceback
import urllib.request

RUNTIME = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"


def post(path, payload):
    request = urllib.request.Request(
        RUNTIME + path,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def main():
    try:
        import handler
    except Exception as error:  # noqa: BLE001 - reported to the Runtime API, like Lambda
        post("/init/error", {"errorMessage": str(error), "errorType": type(error).__name__})
        raise
    while True:
        with urllib.request.urlopen(RUNTIME + "/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(response.read())
        try:
            result = handler.handler(event, None)
        except Exception as error:  # noqa: BLE001
            post(
                f"/invocation/{request_id}/error",
                {
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "stackTrace": traceback.format_exc().splitlines(),
                },
            )
            continue
        post(f"/invocation/{request_id}/response", result)


if __name__ == "__main__":
    main()
