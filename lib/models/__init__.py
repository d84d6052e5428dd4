"""Models: loading (hub, local, tiny, GGUF), generation backends with their key/value prefix
cache, hub access and memory estimates."""
