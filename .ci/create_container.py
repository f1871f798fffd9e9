"""Waits for the local Azure Blob emulator to answer, then creates the test container."""
import os
import sys
import time

from azure.storage.blob import BlobServiceClient

container = sys.argv[1]
url = os.environ["AZURITE_BLOB_STORAGE_URL"]
# The emulator's well-known development account (the one object_store's emulator mode uses).
account = "devstoreaccount1"
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
client = BlobServiceClient(
    account_url=f"{url}/{account}",
    credential={"account_name": account, "account_key": key},
)
deadline = time.time() + 60
while True:
    try:
        if not client.get_container_client(container).exists():
            client.create_container(container)
        print(f"container {container} ready at {url}")
        break
    except Exception as exc:  # the emulator may still be starting
        if time.time() > deadline:
            print(f"cannot create container {container}: {exc}", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.5)
