"""Pure functions, no I/O: normalize, chunk, acl, prompt, cite, groundedness, fusion."""
