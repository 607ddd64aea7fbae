"""ament_python package: ``colcon build --packages-select hil_robot_ros`` on a ROS 2 Jazzy install.

Console scripts land in lib/hil_robot_ros (where ``ros2 run``/launch_ros look for them); the
launch files of the repository's ``launch/`` folder (reached through the ``launch`` symlink) are
installed to share/hil_robot_ros/launch. The hil_robot distribution itself must be importable
by the same Python (``pip install -e <repo>``); it brings the cores and ``configs/``.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "hil_robot_ros"
NODES = ("sim_driver", "camera", "arm_bridge", "controller", "recorder", "policy_bridge", "teleop")

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", sorted(glob("launch/*.launch.py"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="hil_robot maintainers",
    maintainer_email="hil-robot@example.org",
    description="ROS 2 nodes for hil_robot over standard messages",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{n} = hil_robot_ros.nodes.{n}:main" for n in NODES]},
)
