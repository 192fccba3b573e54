"""The aiohttp edge: handlers translate bytes to dispatch events and actions back to bytes."""
