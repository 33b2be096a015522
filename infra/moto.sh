#!/usr/bin/env bash
# Starts moto (DynamoDB + SQS + KMS + S3 emulator) on a free loopback port, creates Baton's
# table, payload bucket, step queue + dead-letter queue and a KMS key in it, and prints the
# variables to use it:
#
#   eval "$(bash infra/moto.sh)"            # moto in the background, variables exported
#   BATON_BACKEND=aws cargo run --release -p baton-local
#   kill "$BATON_MOTO_PID"                   # stop it
#
# Options (environment): MOTO_PORT (default: a free port), BATON_TABLE (default baton),
# BATON_BUCKET (default <table>-payloads, lowercased), BATON_QUEUE_NAME (default baton-steps), BATON_MAX_RECEIVES (default 10), MOTO_LOG
# (default: a temporary file). The table layout is documented in infra/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/venv.sh
py=.venv/bin/python
port=${MOTO_PORT:-$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
log=${MOTO_LOG:-$(mktemp -t baton-moto.XXXXXX.log)}
table=${BATON_TABLE:-baton}
bucket=${BATON_BUCKET:-$(printf '%s' "$table" | tr 'A-Z_.' 'a-z--')-payloads}
queue=${BATON_QUEUE_NAME:-baton-steps}
max_receives=${BATON_MAX_RECEIVES:-10}
endpoint="http://127.0.0.1:$port"

# Detached (own session) so it outlives this script; stopped by its PID.
setsid "$py" infra/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 300); do
  if "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "moto exited; see $log" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.1
done

AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
"$py" - "$endpoint" "$table" "$queue" "$max_receives" "$bucket" >"$log.out" <<'PY' || { kill "$pid"; cat "$log.out" >&2; exit 1; }
import json, sys
import boto3
endpoint, table, queue, max_receives, bucket = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ddb = boto3.client("dynamodb", endpoint_url=endpoint)
ddb.create_table(
    TableName=table,
    BillingMode="PAY_PER_REQUEST",
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
)
ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
sqs = boto3.client("sqs", endpoint_url=endpoint)
dlq = sqs.create_queue(QueueName=f"{queue}-dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
url = sqs.create_queue(QueueName=queue, Attributes={"RedrivePolicy": policy})["QueueUrl"]
kms = boto3.client("kms", endpoint_url=endpoint)
key = kms.create_key(Description="Baton development key")["KeyMetadata"]["KeyId"]
print(f"export BATON_QUEUE_URL={url}")
print(f"export BATON_DLQ_URL={dlq}")
print(f"export BATON_KMS_KEY_ID={key}")
PY

cat <<OUT
# moto listening on $endpoint (log: $log); stop it with: kill $pid
export BATON_MOTO_PID=$pid
export AWS_ENDPOINT_URL=$endpoint
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export BATON_BACKEND=aws
export BATON_TABLE=$table
export BATON_BUCKET=$bucket
export BATON_MAX_RECEIVES=$max_receives
$(cat "$log.out")
OUT
rm -f "$log.out"
