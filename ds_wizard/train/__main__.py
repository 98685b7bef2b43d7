import sys

from ds_wizard.train.loop import main

sys.exit(main())
