"""One module per database driver, each implementing :class:`pgrouter.driver.Driver`.

Importing a module here imports its driver library; the core never does.
"""
