import t from 'tap';
import { rebuildVerifySuite } from './rebuild-verify.js';

// 2000 commands and their projection take minutes on a loaded 2-core machine: extend this file's
// timeout (the tap runner's, through the comment it watches for, and this process's own).
t.setTimeout(900_000);
t.comment('timeout=900000');
rebuildVerifySuite(t, 'postgres');
