#!/usr/bin/env python3
"""Whether parallel receive loops speed up moto's SQS (docs/benchmarks.md, queue mode).

Starts moto with tests/support/moto_launcher.py, puts 1000 messages on a queue per case and
times 1 vs 4 receiving threads, deleting what they receive or keeping it in flight.
Run: python3 benches/moto_receivers.py
"""
import os, socket, subprocess, sys, threading, time

import boto3

here = os.path.dirname(os.path.abspath(__file__))
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
server = subprocess.Popen([sys.executable, os.path.join(here, "..", "tests", "support", "moto_launcher.py"),
                           "-H", "127.0.0.1", "-p", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
endpoint = f"http://127.0.0.1:{port}"

def client():
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="t", aws_secret_access_key="t")

def fill(sqs, url, n=1000):
    for _ in range(0, n, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": "x" * 600} for j in range(10)])

def consume(url, threads, delete, total=1000):
    done, lock = [0], threading.Lock()
    def loop():
        c = client()
        while True:
            with lock:
                if done[0] >= total:
                    return
            got = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    VisibilityTimeout=300).get("Messages", [])
            if delete and got:
                c.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            with lock:
                done[0] += len(got)
    started = time.time()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.time() - started

try:
    sqs = client()
    for _ in range(300):
        try:
            sqs.list_queues(); break
        except Exception:
            time.sleep(0.1)
    for threads, delete in [(1, True), (4, True), (1, False), (4, False)]:
        url = sqs.create_queue(QueueName=f"q{threads}{int(delete)}")["QueueUrl"]
        fill(sqs, url)
        took = consume(url, threads, delete)
        print(f"{threads} receive thread(s), {'deleting' if delete else 'keeping'}: 1000 messages in {took:.1f} s", flush=True)
finally:
    server.kill()
