"""Public contracts: the API's request/response models and the versioned webhook payloads."""
