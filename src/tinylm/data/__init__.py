"""Raw text to training-ready token shards: sources, cleaning and dedup, shards, and `prepare`."""

from tinylm.data.shards import Manifest, ShardWriter, TokenShards, read_header, read_shard, write_shard

__all__ = ["Manifest", "ShardWriter", "TokenShards", "read_header", "read_shard", "write_shard"]
