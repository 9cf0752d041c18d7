from dify_plugin import DifyPluginEnv, Plugin

# Transcribing an hour of audio or captioning many frames takes minutes on a small server.
plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=1800))

if __name__ == "__main__":
    plugin.run()
