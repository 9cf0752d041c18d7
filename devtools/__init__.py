"""Developer tools: build and validate the project's Dify plugin packages (.difypkg)."""
