import sys

from hil_robot.cli import main

sys.exit(main())
