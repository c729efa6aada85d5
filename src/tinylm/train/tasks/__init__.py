"""Small tasks on the same trainer: minGPT's n-digit addition and character-level language modelling."""
