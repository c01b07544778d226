"""The rollout: a pure, table-driven state machine (``engine``) over deployment → wave →
stage → host, its events and actions (``types``), the asyncio ``runner`` that feeds it
events and carries out its actions, the crash-safe ``journal``, the deployment ``lock``
and the ``gates`` (windows, bakes) that decide when a stage may start or finish.
"""
