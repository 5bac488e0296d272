"""What the call and chat ledgers share: a Lua script that writes records and usage entries,
one JSON request and one JSON reply per round trip (calls.lua, chats.lua)."""

from __future__ import annotations

import json
import logging

import redis

from app.redis_clients import raise_if_readonly
from app.usage.entry import FIELDS
from app.usage.replicas import ReplicaWait
from app.usage.spool import Spool

log = logging.getLogger(__name__)


class Ledger:
    name = "ledger"  # for log lines
    spool = Spool(None)  # the app's, from app/usage/spool.py init_app

    def __init__(self, client: redis.Redis, settings, script: str, fixed: dict):
        self.client, self.script = client, client.register_script(script)
        self.keys = [settings.redis_key_prefix + "origins"]  # routes the script in a cluster
        self.replicas = ReplicaWait(client, settings)
        self.fixed = {
            "prefix": settings.redis_key_prefix,
            "maxlen": settings.usage_stream_maxlen,
            "usage_order": FIELDS,
            **fixed,
        }
        self.fixed_json = json.dumps(self.fixed)[:-1] + ","  # encoded once

    def _reply(self, payload: dict) -> dict:
        """Raises redis.RedisError when Redis cannot answer."""
        args = [self.fixed_json + json.dumps(payload)[1:]]
        # A created record is confirmed on REDIS_WAIT_REPLICAS replicas, in the same trip.
        confirm = payload["op"] == "created"
        reply = json.loads(self.replicas.run(self.script, self.keys, args, confirm))
        if reply.get("problems"):
            raise_if_readonly(self.client, reply["problems"])
            log.warning("redis problems in the %s: %s", self.name, reply["problems"])
        return reply
