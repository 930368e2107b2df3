"""Storage: the only package that talks to Redis (keys, codec, Lua scripts, stores)."""
