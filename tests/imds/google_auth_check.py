"""Google's own client (google-auth's metadata module) against `simulate gce`.

Run with GCE_METADATA_HOST and GCE_METADATA_IP pointing at the simulator, and SIM_CONTROL at its
control API. Prints one JSON line with what the client saw; any failure raises.
"""
import json
import os
import threading
import time
import urllib.request

from google.auth.compute_engine import _metadata
from google.auth.transport import requests as transport

control = os.environ["SIM_CONTROL"]
request = transport.Request()

seen = {
    "ping": _metadata.ping(request),
    "project": _metadata.get_project_id(request),
    "name": _metadata.get(request, "instance/name"),
    "preemptible": _metadata.get(request, "instance/scheduling/preemptible"),
    "scheduling": _metadata.get(request, "instance/scheduling/", recursive=True),
    "missing": _metadata.get(
        request, "instance/no-such-item", return_none_for_not_found_error=True
    ),
    "before": _metadata.get(request, "instance/preempted"),
}


def preempt_soon():
    time.sleep(0.5)
    req = urllib.request.Request(
        control + "/_sim/preempt", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).read()


threading.Thread(target=preempt_soon).start()
started = time.monotonic()
seen["after"] = _metadata.get(
    request,
    "instance/preempted",
    params={"wait_for_change": "true", "timeout_sec": "20"},
    timeout=30,
)
seen["waited_seconds"] = time.monotonic() - started
print(json.dumps(seen))
