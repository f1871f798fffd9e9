"""Waits for the local S3 server to answer, then creates the test bucket."""
import os
import sys
import time

import boto3

bucket = sys.argv[1]
client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
deadline = time.time() + 60
while True:
    try:
        client.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} ready at {os.environ['AWS_ENDPOINT_URL']}")
        break
    except Exception as exc:  # the server may still be starting
        if time.time() > deadline:
            print(f"cannot create bucket {bucket}: {exc}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.5)
