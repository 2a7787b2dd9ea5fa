"""The Scenario API over one aiohttp session, and the network path to it."""
