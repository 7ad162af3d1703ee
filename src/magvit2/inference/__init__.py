"""Running a tokenizer on real inputs, outside the model: the streaming runner the CLI uses (frames in,
tokens out and back, in causal chunks and tiles), token refinement, memory estimates and streaming
metrics."""
