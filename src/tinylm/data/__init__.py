"""Raw text to training-ready token shards: sources (`sources`), cleaning and dedup (`clean`, `minhash`),
downloads (`download`), shards (`shards`) and `prepare`.

Import the module you need: this package imports nothing itself, so the tokenizers can use `download`
while `shards` uses the tokenizers, without an import cycle.
"""
