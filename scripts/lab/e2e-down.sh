#!/bin/bash
# Remove the e2e lab completely: stop everything, restore the host (see down.sh) and delete the
# cluster's state ($EAGLE_LAB). The build cache ($EAGLE_LAB_CACHE) stays, so the next
# e2e-up.sh takes seconds, not minutes; delete it by hand to reclaim its space (~2 GB).
#
#   scripts/lab/e2e-down.sh
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/down.sh" --wipe
