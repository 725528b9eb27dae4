import sys

from inceptionlab.cli import main

sys.exit(main())
