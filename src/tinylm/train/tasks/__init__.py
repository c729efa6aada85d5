"""Small tasks on the same trainer: minGPT's n-digit addition and character-level language modelling.

Their defaults live here, torch-free, so `tinylm task <task> --help` shows the settings the tasks really use.
"""

# minGPT's addition demo: a small GPT-2, big batches, checked on every pair at each evaluation
ADDITION_SHAPE = {"family": "gpt2", "n_layers": 2, "dim": 64, "n_heads": 4}
ADDITION_SETTINGS = {"batch_size": 256, "max_steps": 3000, "lr": 3e-3, "warmup_steps": 100, "weight_decay": 0.1,
                     "eval_interval": 250, "eval_batches": 2, "log_interval": 50}  # fmt: skip
# nanoGPT's CPU Shakespeare settings (and its exact GELU)
CHARLM_SHAPE = {"family": "gpt2", "n_layers": 4, "dim": 128, "n_heads": 4, "context_length": 64, "gelu": "exact"}
CHARLM_SETTINGS = {"out_dir": "runs/charlm", "batch_size": 12, "max_steps": 2000, "lr": 1e-3, "min_lr": 1e-4,
                   "beta2": 0.99, "warmup_steps": 100, "eval_interval": 250}  # fmt: skip
# story-words: a requested word is in at least this share and at most that share of the training stories
STORY_WORDS_SHARES = (0.01, 0.2)
