"""Media decoding on the server: audio to samples, image files to RGB pictures, videos to frames."""
