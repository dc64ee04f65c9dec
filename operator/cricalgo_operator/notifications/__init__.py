"""Notifications of a canary's transitions to webhooks and Slack-compatible receivers.

`events` says what happened between two statuses (pure), `payloads` renders and signs what
is sent (pure), `sender` delivers it off the rollout's path (a bounded queue, short timeouts).
"""
