"""The ActiveCampaign sandbox: a faithful local emulator of the API v3."""
