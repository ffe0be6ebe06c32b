"""The conductors: prepare, study, plan, launch (submitit) and status; each runs the stages of the wings below it.

May import every wing; imported only by the CLI.
"""
