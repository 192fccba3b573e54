"""The sans-IO dispatch core: events in, actions out, clock passed in. No asyncio, no sockets."""
