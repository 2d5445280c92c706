"""Head office's side of a chain on NATS JetStream (issue 19; docs/FLEET.md).

The tills publish CloudEvents to the stream (``settleguard.<shop_id>.<till_id>.<kind>``, the contract in
agent/delivery/cloudevents.py); this package only reads that stream, as a consumer of the engine, never a
server of ours:

* :mod:`agent.fleet.stream`: connecting (auth as a till's channel has it) and reading what is there;
* :mod:`agent.fleet.view`: ``settleguard fleet``: every till's last heartbeat, open alerts, dead letters;
* :mod:`agent.fleet.chain`: the chain-wide rule CHAIN-001 (one card, one amount, two tills, one window);
* :mod:`agent.fleet.watch`: ``settleguard fleet watch``: the rule as a small durable consumer that
  publishes its findings back as alerts of the affected tills.
"""
