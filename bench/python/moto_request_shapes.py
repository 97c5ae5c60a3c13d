"""What one moto_server spends on each request shape of a warm trigger, our adapter's and the
Python relay's, from the same client (so the client's own overhead cancels out): the open
(a conditional put of the ~1 KB item with its index keys) against the relay's claim put, and
the settle (a fenced UpdateItem of a dozen clauses) against the relay's two-clause update.

    AWS_ENDPOINT_URL=http://127.0.0.1:5599 python3 bench/python/moto_request_shapes.py

moto evaluates expressions in Python, so a longer expression costs it milliseconds that
DynamoDB does not spend; bench/notes.md ("Side by side with Python") uses the figures.
"""
import os
import statistics
import time
import uuid

import boto3
dynamodb = boto3.client('dynamodb',endpoint_url=os.environ.get('AWS_ENDPOINT_URL','http://127.0.0.1:5599'),region_name='us-east-1',aws_access_key_id='t',aws_secret_access_key='t')
table = 'shapes-' + uuid.uuid4().hex


def S(name):
    return {'AttributeName': name, 'AttributeType': 'S'}


dynamodb.create_table(TableName=table,BillingMode='PAY_PER_REQUEST',
 KeySchema=[{'AttributeName':'pk','KeyType':'HASH'},{'AttributeName':'sk','KeyType':'RANGE'}],
 AttributeDefinitions=[S('pk'),S('sk'),S('sp'),S('cs'),S('op'),S('rp'),S('rs')],
 GlobalSecondaryIndexes=[
  {'IndexName':'by_source','KeySchema':[{'AttributeName':'sp','KeyType':'HASH'},{'AttributeName':'cs','KeyType':'RANGE'}],'Projection':{'ProjectionType':'KEYS_ONLY'}},
  {'IndexName':'by_origin','KeySchema':[{'AttributeName':'op','KeyType':'HASH'},{'AttributeName':'cs','KeyType':'RANGE'}],'Projection':{'ProjectionType':'KEYS_ONLY'}},
  {'IndexName':'retry_due','KeySchema':[{'AttributeName':'rp','KeyType':'HASH'},{'AttributeName':'rs','KeyType':'RANGE'}],'Projection':{'ProjectionType':'KEYS_ONLY'}}])
def small():
    pk='CLAIM#'+uuid.uuid4().hex
    a=time.perf_counter()
    dynamodb.put_item(TableName=table,Item={'pk':{'S':pk},'sk':{'S':'CLAIM'},'state':{'S':'sending'}},ConditionExpression='attribute_not_exists(pk)')
    return time.perf_counter()-a
def ours():
    pk='TRIGGER#'+uuid.uuid4().hex
    item={'pk':{'S':pk},'sk':{'S':'TRIGGER'},'v':{'N':'1'},'r':{'B':os.urandom(600)},'ttl':{'N':'1900000000'},
      'sp':{'S':'S#http#bench-deploy'},'cs':{'S':'0194a1b2c3d4e#'+uuid.uuid4().hex},'rp':{'S':'R3'},'rs':{'S':'0194a1b2c3d4f'},
      'cst':{'S':'sending'},'own':{'S':uuid.uuid4().hex},'fp':{'B':os.urandom(32)},'lease':{'N':'1900000000000'}}
    a=time.perf_counter()
    dynamodb.put_item(TableName=table,Item=item,ConditionExpression='attribute_not_exists(pk) OR (#ttl <= :now AND cst <> :s)',
      ExpressionAttributeNames={'#ttl':'ttl'},ExpressionAttributeValues={':now':{'N':'1800000000'},':s':{'S':'sending'}})
    return time.perf_counter()-a
def median_ms(shape, runs=200):
    for _ in range(20):  # warm-up
        shape()
    return statistics.median(shape() for _ in range(runs)) * 1000


print('relay-shaped claim put %.2f ms, open-shaped put %.2f ms'
      % (median_ms(small), median_ms(ours)))

def seed():
    pk='TRIGGER#'+uuid.uuid4().hex
    dynamodb.put_item(TableName=table,Item={'pk':{'S':pk},'sk':{'S':'TRIGGER'},'v':{'N':'1'},'cst':{'S':'sending'},'own':{'S':'o'},'ttl':{'N':'1900000000'},'state':{'S':'sending'}})
    return pk
def simple_update():
    pk=seed(); a=time.perf_counter()
    dynamodb.update_item(TableName=table,Key={'pk':{'S':pk},'sk':{'S':'TRIGGER'}},UpdateExpression='SET #state = :done, pipeline_id = :id',
      ExpressionAttributeNames={'#state':'state'},ExpressionAttributeValues={':done':{'S':'done'},':id':{'S':str(uuid.uuid4())}})
    return time.perf_counter()-a
def settle_update():
    pk=seed(); a=time.perf_counter()
    dynamodb.update_item(TableName=table,Key={'pk':{'S':pk},'sk':{'S':'TRIGGER'}},
      UpdateExpression='SET #r = :a0, #ttl = :a1, #ver = :a2, #a3 = :a3, #a4 = :a4, cst = :done, res = :res, fin = :fin',
      ConditionExpression='own = :own AND cst = :sending AND #ver = :expected AND #ttl > :now_s',
      ExpressionAttributeNames={'#r':'r','#ttl':'ttl','#ver':'v','#a3':'rp','#a4':'rs'},
      ExpressionAttributeValues={':a0':{'B':os.urandom(650)},':a1':{'N':'1900000001'},':a2':{'N':'2'},':a3':{'S':'R3'},':a4':{'S':'0194a1b2c3d4f'},
        ':done':{'S':'completed'},':res':{'B':os.urandom(40)},':fin':{'N':'1800000000000'},':own':{'S':'o'},':sending':{'S':'sending'},':expected':{'N':'1'},':now_s':{'N':'1800000000'}})
    return time.perf_counter()-a
print('relay-shaped update %.2f ms, settle-shaped update %.2f ms'
      % (median_ms(simple_update), median_ms(settle_update)))
