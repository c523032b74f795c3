<?php
// Silent for ?s= seconds (default 5) before it answers.
sleep((int)($_GET['s'] ?? 5));
echo "late\n";
