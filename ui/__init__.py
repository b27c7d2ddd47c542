"""Gradio-only building blocks of the Space: only ``app.py`` and ``ui/`` import gradio."""
