"""Transport between processes and machines (DESIGN §5): policy serving, weight bus, transition stream.

Robot-side safe: imports numpy, msgpack, pyzmq and safetensors only — never torch.
"""

from hil_robot.transport.codec import CodecError, decode, encode
from hil_robot.transport.links import InProcHub, Link, ZmqLink, tcp_endpoint
from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError, TransportTimeout
from hil_robot.transport.policy_server import PolicyServer, PolicyService
from hil_robot.transport.security import CurveKeys, generate_keys, keys_from_config
from hil_robot.transport.transitions import TransitionReceiver, TransitionSender
from hil_robot.transport.weights import HotSwapPolicy, WeightPublisher, WeightRejected, WeightSubscriber

__all__ = [
    "CodecError", "decode", "encode", "InProcHub", "Link", "ZmqLink", "tcp_endpoint", "PolicyClient",
    "RemotePolicyError", "TransportTimeout", "PolicyServer", "PolicyService", "CurveKeys", "generate_keys",
    "keys_from_config", "TransitionReceiver", "TransitionSender", "HotSwapPolicy", "WeightPublisher",
    "WeightRejected", "WeightSubscriber",
]
