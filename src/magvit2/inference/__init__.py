"""Running a tokenizer on real inputs: padding to the spatial factor, spatial tiling, streaming."""
