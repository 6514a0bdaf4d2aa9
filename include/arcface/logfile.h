/* training.log: rank 0's console output, also appended to a file in the output
 * folder, as insightface arcface_torch's init_logging does (a file handler and a
 * stream handler on the same logger). */
#ifndef ARCFACE_LOGFILE_H
#define ARCFACE_LOGFILE_H

#include "arcface/status.h"

/* From now on, everything written to stdout and stderr through stdio also goes
 * to DIR/training.log (appended; a resumed run continues the same file). Call
 * once, on the one rank whose log it is. */
af_status af_log_tee(const char *dir);

#endif
