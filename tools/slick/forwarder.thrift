service Forwarder {
    oneway void msg(1: i32 key, 2: string payload)
}
service Controller {
    void add_server(1: string ip, 2: i32 port, 3: i32 key)
    void release_servers()
}
