<?php echo "sub index\n";
