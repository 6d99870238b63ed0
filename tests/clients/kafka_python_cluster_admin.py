"""kafka-python's admin client on the cluster APIs of one broker: describe_log_dirs (DescribeLogDirs),
describe_topic_partitions (DescribeTopicPartitions, paged by a cursor) and elect_leaders (ElectLeaders, which on
a partition whose only replica leads answers ELECTION_NOT_NEEDED, as Kafka does)."""
import sys

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from common import check

bootstrap, log_dir = sys.argv[1], sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("ca", 3, 1)])
p = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(30):
    p.send("ca", b"x" * 100, partition=i % 3)
p.flush()
p.close()

# Every partition, with its size, in the broker's one log directory.
res = admin.describe_log_dirs()
check(len(res) == 1 and res[0]["broker"] == 1, f"one broker answers: {res}")
dirs = res[0]["log_dirs"]
check([d["log_dir"] for d in dirs] == [log_dir], f"log dirs {dirs} (expected {log_dir})")
d = dirs[0]
check(d["error_code"] == 0, f"error {d}")
ca = [t for t in d["topics"] if t["name"] == "ca"]
check(len(ca) == 1, f"topic ca in {d['topics']}")
sizes = {p["partition_index"]: p["partition_size"] for p in ca[0]["partitions"]}
check(sorted(sizes) == [0, 1, 2] and all(s > 1000 for s in sizes.values()), f"sizes {sizes}")
check(all(p["offset_lag"] == 0 and not p["is_future_key"] for p in ca[0]["partitions"]), f"{ca}")
check(d["total_bytes"] >= d["usable_bytes"] > 0, f"volume bytes {d['total_bytes']} {d['usable_bytes']}")
# Only the partitions asked for.
only = admin.describe_log_dirs({"ca": [1]})[0]["log_dirs"][0]["topics"]
check([(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in only] == [("ca", [1])],
      f"asked for ca-1: {only}")

# Two partitions a page: the cursor walks the rest; an unknown topic carries its error.
page = admin.describe_topic_partitions(["ca", "nope"], response_partition_limit=2)
got = [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in page["topics"]]
check(got == [("ca", [0, 1])], f"first page {got}")
check(page["next_cursor"] == {"topic_name": "ca", "partition_index": 2}, f"cursor {page['next_cursor']}")
page = admin.describe_topic_partitions(["ca", "nope"], response_partition_limit=2, cursor=page["next_cursor"])
got = [(t["name"], t["error_code"], [p["partition_index"] for p in t["partitions"]]) for t in page["topics"]]
check(got == [("ca", 0, [2]), ("nope", 3, [])], f"second page {got}")
check(page["next_cursor"] is None, f"no more pages: {page['next_cursor']}")
part = page["topics"][0]["partitions"][0]
check((part["leader_id"], part["replica_nodes"], part["isr_nodes"]) == (1, [1], [1]), f"{part}")

# Preferred and unclean elections: the only replica already leads.
for election_type in (0, 1):
    r = admin.elect_leaders(election_type, {"ca": [0]}, raise_errors=False)
    codes = [p.error_code for t in r.replica_election_results for p in t.partition_result]
    check(codes == [84], f"election type {election_type}: {codes} (expected ELECTION_NOT_NEEDED)")
print("ok")
