# liveact_model: the official-compatible LiveAct DiT, its ConvKV memory and the streaming pipeline.
from .config import LiveActConfig, get_config, official, tiny
from .model import AudioContext, Condition, LiveActModel
from .memory import ConvKVMemory

__all__ = ["LiveActConfig", "get_config", "official", "tiny", "LiveActModel", "Condition", "AudioContext",
           "ConvKVMemory"]
