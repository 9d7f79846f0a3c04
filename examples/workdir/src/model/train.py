import os

rank = int(os.environ.get("SKYPILOT_NODE_RANK", "0"))
print(f"training on node {rank}")
