<?php
const POSTS = [
    'hello-world' => ['title' => 'Hello, world', 'body' => 'The first post.'],
    'second' => ['title' => 'A second post', 'body' => 'More words.'],
];
