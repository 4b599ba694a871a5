"""The local stack: a real Kafka broker (KRaft) and a real Weaviate server, obtained and run by ragstream."""
