"""kafka-python's admin client on groups: alter_group_offsets (OffsetCommit from a non-member),
list_group_offsets (OffsetFetch), delete_group_offsets (OffsetDelete, refused while a member is subscribed),
remove_group_members (batched LeaveGroup v3+ by group.instance.id) and delete_groups."""
import sys
import time

import kafka.errors as Errors
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, MemberToRemove, NewTopic
from kafka.structs import OffsetAndMetadata

from common import check

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("ga-sub", 1, 1), NewTopic("ga-old", 1, 1)])
sub, old = TopicPartition("ga-sub", 0), TopicPartition("ga-old", 0)

# An empty group: offsets can be set from outside.
admin.alter_group_offsets("ga", {sub: OffsetAndMetadata(5, "", -1), old: OffsetAndMetadata(7, "", -1)})
got = admin.list_group_offsets({"ga": None})["ga"]
check(got[sub].offset == 5 and got[old].offset == 7, f"offsets after alter: {got}")

# A static member subscribes to ga-sub only.
c = KafkaConsumer(bootstrap_servers=bootstrap, group_id="ga", group_instance_id="static-1",
                  enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)
c.subscribe(["ga-sub"])
# Longer polls: kafka-python 3 can stall a join driven by very short polls under load.
deadline = time.time() + 60
while not c.assignment() and time.time() < deadline:
    c.poll(timeout_ms=500)
check(c.assignment() == {sub}, f"assignment {c.assignment()}")

res = admin.delete_group_offsets("ga", [sub, old])
codes = dict(res)
check(codes[old] in (None, Errors.NoError), f"deleting ga-old offsets: {codes[old]}")
check(codes[sub] is Errors.GroupSubscribedToTopicError,
      f"ga-sub is subscribed, expected GROUP_SUBSCRIBED_TO_TOPIC (86): {codes[sub]}")
got = admin.list_group_offsets({"ga": None})["ga"]
check(old not in got or got[old].offset == -1, f"ga-old offset still there: {got}")

# Remove the static member by instance id; the group becomes empty and can be deleted.
admin.remove_group_members("ga", [MemberToRemove(group_instance_id="static-1")])
state = admin.describe_groups(["ga"])["ga"]["group_state"]
check(state == "Empty", f"state after removing the member: {state}")
c.close(autocommit=False)
admin.delete_groups(["ga"])
check("ga" not in [g["group_id"] for g in admin.list_groups()], "group still listed")
print("ok")
