"""QoS profiles (DESIGN §8): sensor streams are best effort with a short queue, commands reliable,
the e-stop latched (transient local) so a node that starts late still sees a standing stop."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# camera images, joint states, EE pose: the newest sample matters, a lost one does not
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
# the same streams for a consumer that must see every sample (the recorder): still best effort (so it
# matches any sensor publisher) but with a deep reader queue, so a slow consumer under load is not overrun
SENSOR_ARCHIVE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=64, reliability=ReliabilityPolicy.BEST_EFFORT,
                                durability=DurabilityPolicy.VOLATILE)
# stamped commands, policy chunks, step records: every message must arrive, in order
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# step records for the recorder: reliable with a deep queue so a slow disk does not drop labels
RECORD_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# e-stop and other state-like flags: the last value is delivered to late joiners
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
