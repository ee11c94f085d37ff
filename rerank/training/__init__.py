"""Training modules: language modules by masked-language modelling (MLM), in four kinds (LT-SFT, SHiRA,
LoRA through peft, bottleneck adapters through `adapters`), written in the module format the engine
composes."""
