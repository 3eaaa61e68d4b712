import sys

from keras_r21d.cli import main

sys.exit(main())
