"""qwen_omni."""
