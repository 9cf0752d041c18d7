"""How a chat model is spoken to when it is not one of ours.

Models we did not write (the vLLM backend, TensorRT-LLM's ensemble and BLS, any model
behind Triton's generate endpoint) take a prompt string and return text. This package
recognises which interface a model has from its config, renders Dify's conversation
with a chat template, routes media the model cannot take itself, builds each
interface's request, and turns its answers into chat chunks. Everything goes
through the ``TritonClient`` it is handed.
"""
