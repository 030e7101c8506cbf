"""moto's server with the two Auto Scaling calls moto lacks (CompleteLifecycleAction and
RecordLifecycleActionHeartbeat answer HTTP 500 there). Each call is checked against the group's
lifecycle hooks (an unknown hook is a ValidationError, as on AWS) and recorded as one JSON line
in the file named by SIH_MOTO_CALLS, so tests can assert on what the controller sent.

Run: SIH_MOTO_CALLS=/tmp/calls.jsonl python3 tests/support/moto_launcher.py -H 127.0.0.1 -p 5000
"""
import json
import os
import sys

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.server import main

CALLS = os.environ.get("SIH_MOTO_CALLS", os.devnull)


def _record(self, action):
    group = self._get_param("AutoScalingGroupName")
    hook = self._get_param("LifecycleHookName")
    if not self.autoscaling_backend.describe_lifecycle_hooks(group, [hook]):
        raise ValidationError(f"No Lifecycle Hook named {hook} for group {group}")
    entry = {
        "action": action,
        "group": group,
        "hook": hook,
        "token": self._get_param("LifecycleActionToken"),
        "instance": self._get_param("InstanceId"),
        "result": self._get_param("LifecycleActionResult"),
    }
    with open(CALLS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return EmptyResult()


AutoScalingResponse.complete_lifecycle_action = lambda self: _record(self, "CompleteLifecycleAction")
AutoScalingResponse.record_lifecycle_action_heartbeat = lambda self: _record(
    self, "RecordLifecycleActionHeartbeat"
)

if __name__ == "__main__":
    sys.exit(main())
