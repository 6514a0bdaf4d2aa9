/* Whether two paths name one file, for tools that must never write over
 * their input: compared by device and inode (stat follows symbolic links),
 * so "x.h5", "./x.h5", a symlink to it and a hard link all count as the same
 * file. A path that does not exist yet is no existing file's twin. */
#ifndef ARCFACE_SAMEFILE_H
#define ARCFACE_SAMEFILE_H

#include <sys/stat.h>

static inline int af_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (!a || !b || stat(a, &sa) || stat(b, &sb)) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

#endif
