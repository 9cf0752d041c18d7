"""Reading checkpoint directories without loading them: context windows, Whisper layouts, Piper voices."""
