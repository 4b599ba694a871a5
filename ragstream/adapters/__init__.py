"""I/O adapters behind Protocols: vector store, embedder, reranker, LLM, blob."""
