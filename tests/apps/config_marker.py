MARK = "imported by the config file"
